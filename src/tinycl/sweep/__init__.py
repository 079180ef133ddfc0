"""``tinycl sweep``: design-space exploration of continual-learning set-ups on Ray.

Reads a sweep file (:mod:`.spec`), prunes trials over the device constraints by the cost model
and memory planner (:mod:`.cost`), runs the others as real ``tinycl run`` trials on a local or
remote Ray (:mod:`.execute`, :mod:`.search`), and writes the tables, Pareto plots, report and
recommended config (:mod:`.output`).
"""
