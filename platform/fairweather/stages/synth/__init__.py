"""`fairweather synth` and `import-pairs`: the labeled paired set, generated or imported."""
