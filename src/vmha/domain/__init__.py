"""Pure logic of vmha: model, state machines, policies, decisions.

Rule of this package: standard library only. No I/O, no clock, no uuid,
no asyncio, no logging handlers. Time arrives as an argument (`now`,
seconds as a float); identifiers arrive from the caller. Functions return
values and intents; the engine performs them. import-linter enforces it.
"""
