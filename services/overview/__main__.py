from services.overview.app import main

main()
