from expressgateway.cli import main

raise SystemExit(main())
