"""`ray job submit --working-dir . -- python jobs/label.py --config paper [key=value ...]`: `fairweather label` as a Ray job."""

from fairweather.cli import run_job

if __name__ == "__main__":
    run_job("label")
