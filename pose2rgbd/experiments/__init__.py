"""The paper's experiments at CPU scale (Tables 1, 2, 4) and a tiny procedural dataset for tests."""
