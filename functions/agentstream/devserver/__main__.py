from agentstream.devserver.run import main

raise SystemExit(main())
