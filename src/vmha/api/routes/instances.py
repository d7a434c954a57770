"""`/v1/instances`: protected VMs (key: id), and their effective policy.

Project tokens (`project:<id>`) see and change only the instances whose
`project` is theirs: the list is filtered server-side, naming another
project is 403, another project's instance answers 404 exactly like a
missing one (its existence is not revealed).
"""

from __future__ import annotations

from dataclasses import replace

from fastapi import APIRouter, BackgroundTasks, Depends, Query, Response

from vmha.api.auth import Permission, Principal, authorize
from vmha.api.context import AppContext, InstanceLauncher, context, field_prefix, references
from vmha.api.routes.common import Paging, list_errors, location, page_of, paging
from vmha.api.schemas import (
    EffectivePolicyOut,
    InstanceCreate,
    InstanceOut,
    InstanceUpdate,
    PageOut,
    PolicyModel,
)
from vmha.domain.model import Instance, InstanceState
from vmha.domain.policy import DEFAULT_POLICY
from vmha.errors import NotFound, PermissionDenied, ValidationError
from vmha.ports import Store

router = APIRouter(prefix="/v1/instances", tags=["instances"])
READ = Depends(authorize(Permission.INSTANCES_READ))
WRITE = Depends(authorize(Permission.INSTANCES_WRITE))


def _own_project(who: Principal, wanted: str | None) -> str | None:
    """The project filter to apply: a project token's own, or `wanted`."""
    if who.project is None:
        return wanted
    if wanted is not None and wanted != who.project:
        raise PermissionDenied(
            f"a token of project {who.project!r} may only see project {who.project!r}"
        )
    return who.project


def _visible(store: Store, instance_id: str, who: Principal) -> Instance:
    instance = store.get_instance(instance_id)
    if who.project is not None and instance.project != who.project:
        raise NotFound("instance", instance_id)
    return instance


def _check_refs(store: Store, instance: Instance) -> None:
    """A named policy and a host must exist; say which body field is wrong."""
    with references(policy_name="policy", host="host"):
        if instance.policy_name is not None:
            store.get_policy(instance.policy_name)
        if instance.host is not None:
            store.get_host(instance.host)


@router.get("", response_model=PageOut[InstanceOut])
def list_instances(
    page: Paging = Depends(paging),
    segment: str | None = Query(None),
    host: str | None = Query(None),
    state: InstanceState | None = Query(None),
    project: str | None = Query(None),
    ctx: AppContext = Depends(context),
    who: Principal = READ,
) -> dict[str, object]:
    project = _own_project(who, project)
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
    project = _own_project(who, body.project) or ""
    with field_prefix("body"):
        instance = body.to_domain(body.id or ctx.ids.new_id(), project)
    launcher = ctx.launcher if instance.spec is not None else None
    if launcher is not None:
        instance = replace(instance, state=InstanceState.BUILDING)
    _check_refs(ctx.store, instance)
    with references(policy_name="policy"):
        created = ctx.store.create_instance(instance)
    if launcher is not None:
        background.add_task(_launch, launcher, created.id)
    response.headers["Location"] = location("instances", created.id)
    return InstanceOut.of(created)


async def _launch(launcher: InstanceLauncher, instance_id: str) -> None:
    launcher.launch(instance_id)  # on the event loop: the engine's tasks live there


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
    current = _visible(ctx.store, instance_id, who)
    with field_prefix("body"):
        changed = body.apply(current)
    if changed.project != current.project:
        _own_project(who, changed.project)
    _check_refs(ctx.store, changed)
    with references(policy_name="policy"):
        return InstanceOut.of(ctx.store.update_instance(changed))


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
    if instance.policy is not None:
        return EffectivePolicyOut(instance=instance.id, source="inline", name=None,
                                  policy=PolicyModel.of(instance.policy))
    if instance.policy_name is not None:
        named = ctx.store.get_policy(instance.policy_name)
        return EffectivePolicyOut(instance=instance.id, source="named", name=named.name,
                                  policy=PolicyModel.of(named.policy))
    default_name = _segment_default(ctx.store, instance)
    if default_name is not None:
        named = ctx.store.get_policy(default_name)
        return EffectivePolicyOut(instance=instance.id, source="segment", name=named.name,
                                  policy=PolicyModel.of(named.policy))
    return EffectivePolicyOut(instance=instance.id, source="default", name=None,
                              policy=PolicyModel.of(DEFAULT_POLICY))


def _segment_default(store: Store, instance: Instance) -> str | None:
    if instance.host is None:
        return None
    try:
        host = store.get_host(instance.host)
        return store.get_segment(host.segment).default_policy
    except NotFound:
        return None  # host removed since: fall back to the built-in default
