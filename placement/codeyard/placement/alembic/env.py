"""Alembic environment for the placement registry (run through `codeyard.placement.database`)."""

from codeyard.placement.models import Base
from codeyard.service_db import run_alembic_env

run_alembic_env(Base.metadata)
