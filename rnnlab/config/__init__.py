"""params.yaml as typed, validated sections: `sections` holds the defaults, `fields` the one generic
check every key goes through, `params` the whole file (tasks, variants) and its YAML reading."""
