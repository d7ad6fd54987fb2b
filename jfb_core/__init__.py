"""jfb_core: implicit (deep equilibrium) networks for deblurring, trained with JFB.

The library behind the course in ``chapters/``. One module per idea, listed bottom-up:
each imports only modules above it in this list (no cycles, no imports inside functions;
``tests/test_hygiene.py`` checks both).

``errors``       ``UserError``: bad input, reported by the command line without a traceback
``solvers``      fixed-point iteration, Anderson acceleration, CG, power and inverse iteration
``operators``    the Gaussian blur A (an ``nn.Module``): adjoint, normal, spectrum, proximal solve;
                 the named blur settings and paddings
``config``       typed presets (``fast`` for a CPU, ``paper`` for a GPU), every choice tuple, and
                 ``Preset.blur_operator()`` (the preset's A)
``regularizers`` total variation: smoothed (with its gradient) and exact (with its proximal map)
``metrics``      PSNR and SSIM on a stated data range
``report``       merging committed evaluations, gains per image, time to quality
``gradients``    one strategy per backward mode (JFB, IFT, Neumann, unrolled), chosen once;
                 IFT's adjoint equation solved by the solvers above
``models``       DnCNN, CPLNet and DE-GRAD (explicit or proximal data step; ``run`` returns the
                 output with its solve and backward statistics); ``build_model``
``baselines``    direct inverse, Tikhonov/Wiener, TV (gradient descent, FISTA), Plug-and-Play
``provenance``   machine, versions and command of every artefact; atomic saves
``data``         bundled offline images, the CelebA folder loader and cache, measurements
``evaluate``     scoring methods on the same images and measurements, tuned on validation;
                 trained networks and Plug-and-Play as methods, with their solver tallies
``train``        Algorithm 4.1 with checkpoints, exact resume and a divergence guard
``bench``        timing and memory benchmarks (the paper's Fig. 2)
``paper``        the paper-scale GPU run (train JFB and IFT, score beside TV) in one command
``experiments``  the table of experiments behind results/ (``python -m jfb_core reproduce NAME``)
``cli``          ``python -m jfb_core``: parses, calls the modules above, prints

Importing the package does no work: submodules are imported on demand.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
