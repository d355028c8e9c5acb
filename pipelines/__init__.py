"""Ray entry points: each `pipelines/<name>.py` runs locally (`python pipelines/<name>.py key=value`) and under
`ray job submit --working-dir . -- python pipelines/<name>.py ...`."""
