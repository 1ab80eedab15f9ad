"""`python -m ddpm ...` (and `torchrun ... -m ddpm train ...`): see `ddpm.cli`."""

from ddpm.cli import main

raise SystemExit(main())
