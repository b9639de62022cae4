from lapse_request.app import main

main()
