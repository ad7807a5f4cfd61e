import sys

from mmfusion.cli.main import main

sys.exit(main())
