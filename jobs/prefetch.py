"""`ray job submit --working-dir . -- python jobs/prefetch.py --config paper [key=value ...]`: `fairweather prefetch` as a Ray job."""

from fairweather.cli import run_job

if __name__ == "__main__":
    run_job("prefetch")
