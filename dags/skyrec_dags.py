"""All skyrec DAGs, built from configuration (config/base.yaml + config/env/$SKYREC_ENV.yaml).

Shape lives in config, logic in the ``skyrec.airflow`` package: add a variant in config, not a file here.
"""

from skyrec.airflow.factory import build_dags
from skyrec.config import load_config

globals().update(build_dags(load_config()))
