"""`ray job submit --working-dir . -- python jobs/evaluate.py --config paper [key=value ...]`: `fairweather evaluate` as a Ray job."""

from fairweather.cli import run_job

if __name__ == "__main__":
    run_job("evaluate")
