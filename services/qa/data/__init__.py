"""The qa service's data tooling: the synthetic export's generator, the bulk
loader, and the export's files and columns they share. Not part of the
serving process (nothing under services/qa/ outside data/ imports it)."""
