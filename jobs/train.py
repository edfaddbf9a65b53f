"""`ray job submit --working-dir . -- python jobs/train.py --config paper [key=value ...]`: `fairweather train` as a Ray job."""

from fairweather.cli import run_job

if __name__ == "__main__":
    run_job("train")
