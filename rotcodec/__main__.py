from rotcodec.cli.main import main

raise SystemExit(main())
