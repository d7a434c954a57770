"""`/v1/instances`: protected VMs (key: id), and their effective policy.

A policy must fit the instance's definition (exec needs the guest agent
channel, a bare tcp port the instance's address: 422 naming the field).
What a project token may put in one is `vmha.api.offers`' business.

Project tokens (`project:<id>`) see and change only the instances whose
`project` is theirs: the list is filtered server-side, naming another
project is 403, another project's instance answers 404 exactly like a
missing one (its existence is not revealed).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace

from fastapi import APIRouter, BackgroundTasks, Depends, Query, Response

from vmha.api import offers
from vmha.api.auth import Permission, Principal, authorize
from vmha.api.context import AppContext, context, field_prefix, references
from vmha.api.routes.common import (
    Paging,
    list_errors,
    location,
    own_project,
    page_of,
    paging_for,
    rewrite,
)
from vmha.api.schemas import (
    EffectivePolicyOut,
    InstanceCreate,
    InstanceOut,
    InstanceUpdate,
    PageOut,
    PolicyModel,
    PolicySource,
)
from vmha.domain.commands import Launch
from vmha.domain.model import Instance, InstanceState
from vmha.domain.policy import DEFAULT_POLICY, HAPolicy, check_cloud, check_fits
from vmha.errors import Conflict, NotFound, ValidationError
from vmha.ports import Store

router = APIRouter(prefix="/v1/instances", tags=["instances"])
READ = Depends(authorize(Permission.INSTANCES_READ))
WRITE = Depends(authorize(Permission.INSTANCES_WRITE))


def _visible(store: Store, instance_id: str, who: Principal) -> Instance:
    instance = store.get_instance(instance_id)
    if who.project is not None and instance.project != who.project:
        raise NotFound("instance", instance_id)
    return instance


@contextmanager
def _neutral_clash(who: Principal, instance_id: str) -> Iterator[None]:
    """A project token whose id is taken learns nothing about whose it is:
    the same answer whether the instance is its own or another project's."""
    try:
        yield
    except Conflict as exc:
        if who.project is None:
            raise
        raise Conflict(f"the id {instance_id!r} cannot be used; choose another, or leave "
                       "id out to get a generated one") from exc


def _check_refs(store: Store, instance: Instance, can_rebuild: bool) -> None:
    """A named policy and a host must exist; say which body field is wrong.
    The policy must fit the instance's definition (`check_fits`) and the
    cloud (`check_cloud`)."""
    with references(policy_name="policy", host="host"):
        if instance.policy_name is not None:
            store.get_policy(instance.policy_name)
        if instance.host is not None:
            store.get_host(instance.host)
    try:
        source, name, policy = resolve_policy(store, instance)
    except NotFound:  # a segment default deleted since: the built-in default applies
        source, name, policy = "default", None, DEFAULT_POLICY
    try:
        check_fits(policy, instance.spec)
        check_cloud(policy, can_rebuild)
    except ValidationError as exc:
        if source == "inline":
            raise ValidationError(f"body.policy.{exc.field}", exc.reason) from exc
        where = "body.policy_name" if source == "named" else "body.spec"
        raise ValidationError(where, f"{source} policy {name!r}: {exc.field}: "
                              f"{exc.reason}") from exc


@router.get("", response_model=PageOut[InstanceOut])
def list_instances(
    page: Paging = Depends(paging_for("id", "name", "state", "host", "project")),
    segment: str | None = Query(None),
    host: str | None = Query(None),
    state: InstanceState | None = Query(None),
    project: str | None = Query(None),
    ctx: AppContext = Depends(context),
    who: Principal = READ,
) -> dict[str, object]:
    project = own_project(who, project)
    if page.marker is not None and who.project is not None:
        try:
            _visible(ctx.store, page.marker, who)
        except NotFound as exc:
            raise ValidationError(
                "query.marker", f"{exc.detail}; start again without a marker"
            ) from exc
    filters = {"segment": segment, "host": host, "project": project,
               "state": None if state is None else state.value}
    with list_errors():
        result = ctx.store.list_instances(page.query(filters))
    return page_of(result, InstanceOut.of)


@router.post("", status_code=201, response_model=InstanceOut)
def create_instance(
    body: InstanceCreate, response: Response, background: BackgroundTasks,
    ctx: AppContext = Depends(context), who: Principal = WRITE,
) -> InstanceOut:
    """Record an instance. With a `spec` and a cloud adapter that defines
    instances (libvirt), it is recorded as `building` and then defined and
    started on its host (or on the least loaded schedulable host)."""
    project = own_project(who, body.project) or ""
    with field_prefix("body"):
        instance = body.to_domain(ctx.ids.new_id() if body.id is None else body.id, project)
    offers.check_instance(who, instance, None, ctx.settings.tenants)
    launch = ctx.defines_instances and instance.spec is not None
    if launch:
        instance = replace(instance, state=InstanceState.BUILDING)
    _check_refs(ctx.store, instance, ctx.can_rebuild)
    with references(policy_name="policy"), _neutral_clash(who, instance.id):
        created = ctx.store.create_instance(instance)
    if launch:
        background.add_task(ctx.ask, Launch(created.id))
    response.headers["Location"] = location("instances", created.id)
    return InstanceOut.of(created)


@router.get("/{instance_id}", response_model=InstanceOut)
def get_instance(
    instance_id: str, ctx: AppContext = Depends(context), who: Principal = READ
) -> InstanceOut:
    return InstanceOut.of(_visible(ctx.store, instance_id, who))


@router.patch("/{instance_id}", response_model=InstanceOut)
def update_instance(
    instance_id: str, body: InstanceUpdate, ctx: AppContext = Depends(context),
    who: Principal = WRITE,
) -> InstanceOut:
    def change(current: Instance) -> Instance:
        with field_prefix("body"):
            changed = body.apply(current)
        if changed.project != current.project:
            own_project(who, changed.project)
        offers.check_instance(who, changed, current, ctx.settings.tenants)
        _check_refs(ctx.store, changed, ctx.can_rebuild)
        return changed
    with references(policy_name="policy"):
        return InstanceOut.of(rewrite(lambda: _visible(ctx.store, instance_id, who), change,
                                      ctx.store.update_instance))


@router.delete("/{instance_id}", status_code=204)
def delete_instance(
    instance_id: str, ctx: AppContext = Depends(context), who: Principal = WRITE
) -> Response:
    _visible(ctx.store, instance_id, who)
    ctx.store.delete_instance(instance_id)
    return Response(status_code=204)


@router.get("/{instance_id}/policy", response_model=EffectivePolicyOut)
def effective_policy(
    instance_id: str, ctx: AppContext = Depends(context), who: Principal = READ
) -> EffectivePolicyOut:
    """The policy vmha applies: inline > policy_name > the segment default of
    the instance's host > the built-in default."""
    instance = _visible(ctx.store, instance_id, who)
    source, name, policy = resolve_policy(ctx.store, instance)
    return EffectivePolicyOut(instance=instance.id, source=source, name=name,
                              policy=PolicyModel.of(policy))


def resolve_policy(store: Store, instance: Instance) -> tuple[PolicySource, str | None, HAPolicy]:
    """(source, stored name, policy) of the policy vmha applies to `instance`."""
    if instance.policy is not None:
        return "inline", None, instance.policy
    if instance.policy_name is not None:
        named = store.get_policy(instance.policy_name)
        return "named", named.name, named.policy
    default_name = _segment_default(store, instance)
    if default_name is not None:
        named = store.get_policy(default_name)
        return "segment", named.name, named.policy
    return "default", None, DEFAULT_POLICY


def _segment_default(store: Store, instance: Instance) -> str | None:
    if instance.host is None:
        return None
    try:
        host = store.get_host(instance.host)
        return store.get_segment(host.segment).default_policy
    except NotFound:
        return None  # host removed since: fall back to the built-in default
