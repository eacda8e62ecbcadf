"""aliasop: keeps model-serving Deployments in step with MLflow Model Registry aliases."""

from importlib.metadata import version

# Written once, in pyproject.toml; the installed distribution's metadata carries it.
__version__ = version("aliasop")
