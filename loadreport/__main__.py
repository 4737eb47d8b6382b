import sys

# `python -m loadreport load ...` is the load benchmark, `jobs ...` the batch jobs' one; anything else is the
# resource report's options.
if sys.argv[1:2] == ["load"]:
    from loadreport import load

    sys.exit(load.main(sys.argv[2:]))
if sys.argv[1:2] == ["jobs"]:
    from loadreport import jobs

    sys.exit(jobs.main(sys.argv[2:]))
from loadreport import report

sys.exit(report.main())
