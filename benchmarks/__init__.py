"""Speed benchmarks of keras_transformer against its peers.

`keras-transformer bench [--quick] [--output benchmarks/RESULTS.md]` calls
`keras_transformer.benchmarks.harness.main(quick, output)`, which writes
RESULTS.md (and the raw figures as RESULTS.json beside it).

Modules:
    harness             the plan of the run (sizes, runtimes) and `main`
    timing              repeated timing with disturbance detection; machine
    train_speed         training throughput of one model (own process)
    decode_speed        decoding runtimes at a forced output length
    ours                our model: random weights, forced length
    reference_tutorial  a model built the way TensorFlow's NMT tutorial does
    keras_hub_peer      the same model from keras-hub layers, cached decoding
    report              RESULTS.md rendering and the issue's targets

The peers need the optional packages of the `bench` extra (keras-hub,
ctranslate2); a runtime that cannot run is listed in the report's notes.
"""
