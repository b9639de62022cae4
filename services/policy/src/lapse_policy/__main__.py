from lapse_policy.app import main

main()
