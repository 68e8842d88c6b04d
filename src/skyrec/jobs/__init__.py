"""Heavy steps run outside the Airflow worker: see ``skyrec.jobs.base``."""
