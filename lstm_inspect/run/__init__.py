"""Running a model: the numpy forward pass, the native (torch / ONNX / TF1) forward, `explain`'s equations, and
`verify` against Keras and the native frameworks. May import `analysis`, `gates`, `readers` and the neutral model;
never `report`, `api`, `render`, `cli`, click or rich. Frameworks are imported lazily, only to verify."""
