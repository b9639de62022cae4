from lapse_audit.app import main

main()
