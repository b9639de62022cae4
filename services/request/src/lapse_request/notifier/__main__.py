from lapse_request.notifier.app import main

main()
