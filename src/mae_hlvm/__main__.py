from mae_hlvm.cli import main

raise SystemExit(main())
