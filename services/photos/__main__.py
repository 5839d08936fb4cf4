from services.photos.app import main

main()
