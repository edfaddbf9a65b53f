"""`ray job submit --working-dir . -- python jobs/sweep.py --sweep sweeps/paper.yaml [key=value ...]`: `fairweather sweep` as a Ray job."""

from fairweather.cli import run_job

if __name__ == "__main__":
    run_job("sweep")
