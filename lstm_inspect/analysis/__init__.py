"""What `inspect`, `check`, `snapshot` and `diff` compute from an open model: statistics, notes, check rules and
settings, snapshots and their comparison. May import `gates`, `readers` and the neutral model; never `run`,
`report`, `api`, `render`, `cli`, click or rich."""
