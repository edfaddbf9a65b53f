"""`ray job submit --working-dir . -- python jobs/demo.py --config paper [key=value ...]`: `fairweather demo` as a Ray job."""

from fairweather.cli import run_job

if __name__ == "__main__":
    run_job("demo")
