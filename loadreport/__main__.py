import sys

from loadreport import report

sys.exit(report.main())
