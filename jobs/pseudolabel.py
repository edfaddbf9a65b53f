"""`ray job submit --working-dir . -- python jobs/pseudolabel.py --config paper [--checkpoint CKPT --round K] [--lineage NAME] [key=value ...]`: `fairweather pseudolabel` as a Ray job."""

from fairweather.cli import run_job

if __name__ == "__main__":
    run_job("pseudolabel")
