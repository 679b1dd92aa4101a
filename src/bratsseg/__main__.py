import sys

from bratsseg.cli.main import main

sys.exit(main())
