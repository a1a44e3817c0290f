import sys

from serving.app import main

sys.exit(main())
