from services.qa.app import main

main()
