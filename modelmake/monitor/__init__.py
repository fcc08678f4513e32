"""Device telemetry against the bundle's baselines: drift, budgets, rates, A/B comparisons, guarded rollouts.

    telemetry.py  read JSON lines fast; bad lines are counted with a message, never a crash
    baselines.py  the baselines of verified bundles: what each record is compared with
    stats.py      PSI, Jensen-Shannon distance, percentiles from histograms, intervals
    analysis.py   figures and alerts per model version x chipset x arm, and the comparisons
    report.py     the report as JSON and as self-contained HTML
    rollout.py    advance, hold or roll back a staged rollout on that evidence
"""
