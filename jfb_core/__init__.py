"""jfb_core: implicit (deep equilibrium) networks for deblurring, trained with JFB.

The library behind the course in ``chapters/``. One module per idea:

``config``      typed presets (``fast`` for a CPU, ``paper`` for a GPU)
``operators``   the Gaussian blur A, its exact adjoint, spectrum bounds, noise
``regularizers`` smoothed total variation and Tikhonov
``baselines``   direct inverse, Tikhonov/Wiener, TV gradient descent
``data``        bundled offline images, the CelebA folder loader, measurements
``metrics``     PSNR and SSIM on a stated data range
``solvers``     fixed-point iteration and Anderson acceleration
``models``      DnCNN, CPLNet and DE-GRAD (explicit or proximal data step)
``gradients``   JFB, IFT and Neumann backward passes through a fixed point
``train``       Algorithm 4.1 with checkpoints, exact resume and a divergence guard
``evaluate``    scoring methods on the same images and measurements
``report``      merging committed evaluations, gains per image, time to quality
``bench``       timing and memory benchmarks (the paper's Fig. 2)
``cli``         ``python -m jfb_core train|evaluate|bench|prepare``

Importing the package does no work: submodules are imported on demand.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
