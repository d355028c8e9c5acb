"""The paper's ablation grid (Tables 1-3) as one command: rows of switches of the one model, run over Ray, logged
as one MLflow parent run with a child per row and seed, and a report that checks the paper's claims."""
