from lapse_grant.app import main

main()
