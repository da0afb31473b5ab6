"""The MLOps pipeline around `unlearning/`: Prefect flow and tasks, DVC stages, MLflow tracking and
registry, deletion requests, schedules and the `unlearn` CLI. The only package that imports prefect,
mlflow or dvc; nothing is imported here, so `unlearn --help` and `python -m flows.<stage>` stay light.
"""
