"""`ray job submit --working-dir . -- python jobs/synth.py --config paper [key=value ...]`: `fairweather synth` as a Ray job."""

from fairweather.cli import run_job

if __name__ == "__main__":
    run_job("synth")
