"""augury's HTTP serving: app factory, thin routes, the dynamic batcher, the hybrid router, error mapping."""
