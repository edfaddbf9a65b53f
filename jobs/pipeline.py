"""`ray job submit --working-dir . -- python jobs/pipeline.py --config paper [key=value ...]`: `fairweather pipeline`
as a Ray job."""

from fairweather.cli import run_job

if __name__ == "__main__":
    run_job("pipeline")
