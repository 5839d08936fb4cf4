"""Data tooling shared by the services' generators and loaders (never imported
by a serving process; installed with the `data` extra, which brings tqdm).

Loading a CSV export: `values` (field rules, compact id sets), `csv_parse`
(reading, repair hooks, rejects, COPY-ready chunks), `parse_job` (a file
parsed in a spawned child), `bulk_copy` (COPY and the bulk-load session),
`report` (load-report.json, rejects.csv), `rebuild` (indexes, primary keys,
sequences), `service_load` (the load transaction and command line every
loader shares). Generating one: `generating`.
"""
