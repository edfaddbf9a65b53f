"""`ray job submit --working-dir . -- python jobs/restore.py --checkpoint C --input I --output O`: `fairweather restore` as a Ray job."""

from fairweather.cli import run_job

if __name__ == "__main__":
    run_job("restore")
