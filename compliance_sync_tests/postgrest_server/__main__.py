"""``python -m compliance_sync_tests.postgrest_server --database-url URL --port N --jwt-secret S ...``."""

import sys

from .process import main

sys.exit(main())
