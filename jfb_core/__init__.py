"""jfb_core: implicit (deep equilibrium) networks for deblurring, trained with JFB.

The library behind the course in ``chapters/``. One module per idea:

``config``      typed presets (``fast`` for a CPU, ``paper`` for a GPU)
``operators``   the Gaussian blur A, its exact adjoint, spectrum bounds, noise
``regularizers`` smoothed total variation and Tikhonov
``baselines``   direct inverse, Tikhonov/Wiener, TV gradient descent
``data``        bundled offline images, the CelebA folder loader, measurements
``metrics``     PSNR and SSIM on a stated data range
``solvers``     fixed-point iteration and Anderson acceleration
``cli``         ``python -m jfb_core train|evaluate|bench|prepare``

Importing the package does no work: submodules are imported on demand.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
