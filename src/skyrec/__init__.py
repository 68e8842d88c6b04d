"""skyrec: batch personalised recommendations orchestrated by Apache Airflow 3."""

__version__ = "0.1.0"
