"""Tuned recipes: a sweep's `search:` section, searched by Ray Tune before the final trials.

- `spec.py`: the section's schema (space, samples, searcher, scheduler, seeds, per);
- `units.py`: what is searched (an experiment, or an experiment at one level), checked before
  Ray starts;
- `stage.py`: the search stage: one Tune experiment per unit, resumed or reused on a rerun;
- `select.py`: the choice, from the search trials' validation rows alone;
- `report.py`: search_report.md/.csv and its figure.
"""
