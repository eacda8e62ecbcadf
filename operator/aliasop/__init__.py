"""aliasop: keeps model-serving Deployments in step with MLflow Model Registry aliases."""

__version__ = "0.1.0"
