from mediaedge.cli import main

raise SystemExit(main())
