"""The local cloud's state, one module per resource family (as API stand-ins such as moto keep it).

`state.CloudState` holds the one JSON document every family lives in (persisted as state.json) and
the bookkeeping they share; each family module renders, finds, changes and applies the finished
actions of its own resources. `clock.advance` completes what is due, in order.
"""
