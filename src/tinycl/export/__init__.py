"""Export a latent-replay learner as a self-contained C99 project (issue 14 groundwork).

- :mod:`plan`: a neutral description of the learner (front ops, back ops, quantizer,
  replay memory, optimizer) and builders from ``QuantizedFront`` / ``Network``;
- :mod:`ref`: the back's FP32 kernels in the fixed summation order of the C runtime;
- :mod:`reference`: the whole learning event in Python, bit-exact with the C;
- :mod:`planner`: the arena size; :mod:`generate`: writes the C project.
"""
